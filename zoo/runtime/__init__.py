"""Run-time support: devices and speed switches, checkpoints on disk, the console, loggers, the profiler, random
states and the model summary."""
