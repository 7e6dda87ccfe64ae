"""nbgrader configuration: solutions/ is the instructor source, exercises/ the student release.

nbgrader's own tools on what ``python -m grader grade ... --out OUT`` wrote: set MHA_GRADING_OUT=OUT (the one
setting that joins them). The gradebook is then OUT/gradebook.db and the autograded notebooks OUT/autograded/, so
``nbgrader export`` and formgrader (started from this folder) read the grader's results. Without it the gradebook is
.nbgrader/gradebook.db, which `python -m grader release` (nbgrader generate_assignment) uses. A gradebook on a server
(``grade --db postgresql+psycopg://...``) is named on nbgrader's command line: --CourseDirectory.db_url=URL.
"""
import os

c = get_config()  # noqa: F821  (provided by nbgrader/traitlets when this file is loaded)

here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = here
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, ".nbgrader", "gradebook.db")

grading_out = os.environ.get("MHA_GRADING_OUT")
if grading_out:
    grading_out = os.path.abspath(grading_out)
    c.CourseDirectory.db_url = "sqlite:///" + os.path.join(grading_out, "gradebook.db")
    # An absolute path: nbgrader joins it to the root with os.path.join, which keeps it as it is.
    c.CourseDirectory.autograded_directory = os.path.join(grading_out, "autograded")

c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
