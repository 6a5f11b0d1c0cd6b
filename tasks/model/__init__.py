"""The user's model: its source, routing of parameters, the factory, inspection, initial weights."""
