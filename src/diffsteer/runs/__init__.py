"""Where runs live: the run store, the job runner, and the executors that make images."""
