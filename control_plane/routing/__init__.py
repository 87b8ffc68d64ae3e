"""How a request reaches a model: each project's routing table (cached per replica)
and the choice of a slot by weight or sticky user hash."""
