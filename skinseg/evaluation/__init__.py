"""Evaluation (inference side, no TensorFlow): ISIC metrics of the deployed ONNX artifact."""
