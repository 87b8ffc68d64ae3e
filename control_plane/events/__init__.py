"""Events between replicas over Redis Pub/Sub: versioned pydantic models, one dispatcher."""
