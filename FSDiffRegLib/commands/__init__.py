"""The command line, the Slicer worker and batch runs: argparse, requests, work folders."""
