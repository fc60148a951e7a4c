"""runtime layer of alpamayo_ros."""
