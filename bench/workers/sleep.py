"""Measure (c): keep the launcher busy for about one second."""
import time

time.sleep(1.0)
