"""anywidget front ends: Studio, JobCard, Gallery and Compare.

Importing this package registers how a sync ``Job`` shows itself in a notebook (a live card);
the core never imports the widgets.
"""

from ..sync import Job
from .compare import Compare
from .gallery import Gallery
from .jobcard import JobCard, show_card
from .studio import Studio

Job.display_hook = show_card

__all__ = ["Compare", "Gallery", "JobCard", "Studio"]
