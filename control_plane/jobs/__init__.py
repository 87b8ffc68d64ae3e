"""Work that outlives a request: async predictions, durable in Redis (Streams)."""
