"""Engine actors: the code that runs on cluster nodes."""
