"""`vitedge matrix`: every target side by side: cells (one JSON each), a merge, a Pareto plot."""
