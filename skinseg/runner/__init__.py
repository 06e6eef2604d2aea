"""What the front ends drive: one image's result and its encodings, the batch run (local or on Ray),
and what --model and --config mean. Below commands/, above the engine (no TensorFlow)."""
