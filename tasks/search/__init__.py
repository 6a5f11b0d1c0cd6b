"""Search: parameter spaces, strategies that propose candidates, nested CV."""
