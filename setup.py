"""pip installation of the alpamayo_ros Python library and its command-line tools.

On a ROS 2 machine the package is built by colcon through CMakeLists.txt (ament_cmake +
ament_cmake_python), which also generates the interfaces; this file serves pip (development
venvs, CI, and hosts that only export models or build engines).
"""

from setuptools import find_packages, setup

setup(
    name="alpamayo_ros",
    version="0.1.0",
    description="ROS 2 lifecycle planner for NVIDIA Alpamayo-R1 (TensorRT on Jetson Thor)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["alpamayo_ros", "alpamayo_ros.*"]),
    # The committed tiny model (demo, ROS tests) travels with the package.
    package_data={"alpamayo_ros": ["resources/tiny_model/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/alpamayo_ros"]),
        ("share/alpamayo_ros", ["package.xml"]),
    ],
    install_requires=[
        "numpy>=1.26",
        "opencv-python-headless>=4.8",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "pyyaml>=6",
    ],
    extras_require={
        "torch": ["torch>=2.4"],
        "onnx": ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2"],
        "tensorrt": ["tensorrt>=10.13", "cuda-python>=12.6"],
        "replay": ["rosbags>=0.10", "mcap>=1.2", "mcap-ros2-support>=0.5", "matplotlib>=3.7", "tqdm>=4.60"],
        # `alpamayo-ros import-pai`: PhysicalAI-AV clips -> bags (with the replay extra)
        "pai": ["av>=14", "pyarrow>=14"],
        # `alpamayo-ros evaluate --ray`: bags spread over a Ray cluster (with the replay extra)
        "ray": ["ray>=2.40"],
    },
    entry_points={
        "console_scripts": [
            "alpamayo-planner = alpamayo_ros.ros.main:main",
            "alpamayo-ros = alpamayo_ros.tools.cli:main",
        ],
    },
)
