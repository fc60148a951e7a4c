"""alpamayo_ros: a ROS 2 planner around NVIDIA Alpamayo-R1.

Layers (dependencies point down only):
  ros/      rclpy lifecycle node, parameters, QoS, message conversions, diagnostics
  tools/    command-line tools: replay evaluation, demo data, model preparation, engine build
  runtime/  inference backends (torch, ONNX Runtime, TensorRT), export, model definitions
  core/     pure NumPy: egomotion, tokens, action space, flow matching, preprocessing, Planner

The generated interfaces (``alpamayo_ros.msg``) are not in the sources: rosidl generates them into
this package at build time (colcon on a ROS machine, ``scripts/dev_setup.sh`` in a venv).
"""

__version__ = "0.1.0"
