"""Scripts that regenerate the figures in plots/ (see plots/README.md)."""
