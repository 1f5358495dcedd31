"""tensorflow-datasets access without TensorFlow: reading prepared array_record data, preparing CIFAR offline."""
