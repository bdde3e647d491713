"""The streaming routes: thin loops over ``core.follow`` that frame and write."""
