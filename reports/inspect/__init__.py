"""The one-image walkthrough's page: its figures, sections and the page."""
