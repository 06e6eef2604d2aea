"""The commands: each one a front end that wires the engine, the evaluation and training to files."""
