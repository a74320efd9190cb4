"""retina: RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") step by step.

The modules follow the notebooks: boxes (geometry), anchors (01), targets (02), losses (03),
model (04), train (05), postprocess (06); pretrained brings in torchvision's weights (06).
"""

from retina.config import RetinaConfig
from retina.model import RetinaNet
from retina.pretrained import from_torchvision
from retina.targets import DetectionCollate

__all__ = ["RetinaConfig", "RetinaNet", "DetectionCollate", "from_torchvision"]
__version__ = "0.1.0"
