"""The course: its notebooks and solutions, the exercises' checkers, the web site.

    notebooks.py   the notebooks, their exercises and solutions; the course model (the GPT
                   notebook 09 trains, cached for the notebooks after it)
    exercises/     the checkers, one module per chapter, on shared machinery
    site.py        `python -m numpygpt course build`: the course as a static web site

    from numpygpt.course import course_model
"""

from .notebooks import CourseError, course_model, course_model_dir, course_recipe

__all__ = ["CourseError", "course_model", "course_model_dir", "course_recipe"]
