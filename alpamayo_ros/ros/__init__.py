"""ros layer of alpamayo_ros."""
