"""Projects: a named set of deployment slots with its selection mode."""
