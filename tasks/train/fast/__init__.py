"""The fast engine: many dense networks trained in one XLA program, step for step as Keras."""
