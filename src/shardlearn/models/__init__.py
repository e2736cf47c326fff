"""Models: each takes its communicator (or Context) and fits on the local rows of every rank."""
