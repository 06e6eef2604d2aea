"""Inference side: ONNX Runtime only, never TensorFlow (an edge box installs skinseg[cpu] or [gpu])."""
