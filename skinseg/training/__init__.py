"""Training side (TensorFlow/Keras): data pipeline and augmentation, model, training loop, export."""
