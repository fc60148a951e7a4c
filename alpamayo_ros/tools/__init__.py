"""tools layer of alpamayo_ros."""
