"""anywidget front ends: Studio, JobCard, Gallery and Compare."""

from .compare import Compare
from .gallery import Gallery
from .jobcard import JobCard
from .studio import Studio

__all__ = ["Compare", "Gallery", "JobCard", "Studio"]
