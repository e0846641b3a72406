"""COCO keypoints, CrowdPose and MPII as TensorFlow Datasets (ArrayRecord), built and read
without TensorFlow: `build` writes them, `source` reads them back as PersonRecords."""
