"""Reading, checking and preparing images, label maps and cines; displacement fields; metrics."""
