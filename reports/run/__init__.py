"""The dataset report: its figures, overlay tiles, the page's context and the page."""
