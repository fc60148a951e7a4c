"""NVIDIA PhysicalAI-Autonomous-Vehicles clips (the Alpamayo reference's data) to rosbag2.

`dataset` reads the dataset's on-disk layout (as NVIDIA's download script and the `physical_ai_av`
devkit 0.2.3 lay it out) without the devkit; `ftheta` maps its f-theta intrinsics onto a ROS
camera model; `convert` writes one rosbag2 MCAP per clip (`alpamayo-ros import-pai`).
"""
