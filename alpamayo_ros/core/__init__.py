"""core layer of alpamayo_ros."""
