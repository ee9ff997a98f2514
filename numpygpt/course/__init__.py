"""The course: its notebooks and solutions, the exercises' checkers, the web site."""
