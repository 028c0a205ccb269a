"""A run's story for people: `autopack show` (plain text) and `autopack report` (HTML, Markdown).

``story`` reads everything about a run from the store (raw sqlite3, no ORM) and git into one
JSON-ready dict; ``text``, ``html`` and ``markdown`` render that dict. None of them imports
typer or rich; pygments (which rich brings) is imported only to highlight an HTML diff.
"""
