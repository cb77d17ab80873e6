"""Model families, one module each, with a name registry.

Every lowercase builder decorated with ``register_model`` is listed by ``list_models()``
and built by ``get_model(name, **kwargs)``.
"""

from cnncourse.models import alexnet, googlenet, lenet, resnet, vgg
from cnncourse.models._registry import get_model, list_models

__all__ = ["alexnet", "googlenet", "get_model", "lenet", "list_models", "resnet", "vgg"]
