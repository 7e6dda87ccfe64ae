"""nbgrader configuration: solutions/ is the instructor source, exercises/ the student release."""
import os

c = get_config()  # noqa: F821  (provided by nbgrader/traitlets when this file is loaded)

here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = here
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, ".nbgrader", "gradebook.db")
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
