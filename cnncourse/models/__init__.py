"""Model families, one module each, with a name registry.

Every lowercase builder is importable from here (``cnncourse.models.vgg16()``), listed by
``list_models()`` and built by name with ``get_model(name, **kwargs)``. As in
torchvision, ``cnncourse.models.alexnet`` and ``cnncourse.models.googlenet`` name the
builders; import the modules as ``cnncourse.models.alexnet`` via ``from ... import``.
"""

from cnncourse.models._registry import get_model, list_models
from cnncourse.models.alexnet import AlexNet, AlexNetSmall, alexnet, alexnet_small
from cnncourse.models.autoencoder import (
    Autoencoder,
    ConvAutoencoder,
    autoencoder,
    conv_autoencoder,
    denoising_autoencoder,
    sparse_autoencoder,
)
from cnncourse.models.googlenet import (
    GoogLeNet,
    GoogLeNetSmall,
    Inception,
    InceptionFactorized,
    googlenet,
    googlenet_small,
)
from cnncourse.models.lenet import LeNet5, LeNet5Textbook, LeNetCaffe, lenet5, lenet_caffe
from cnncourse.models.resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    ResNet,
    cifar_resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from cnncourse.models.rnn import GRU, LSTM, RNN, SequenceClassifier, sequence_gru, sequence_lstm, sequence_rnn
from cnncourse.models.vgg import (
    VGG,
    make_vgg_features,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
    vgg_small,
)

__all__ = [
    "AlexNet",
    "AlexNetSmall",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "GoogLeNet",
    "GoogLeNetSmall",
    "Inception",
    "InceptionFactorized",
    "LeNet5",
    "LeNet5Textbook",
    "LeNetCaffe",
    "ResNet",
    "VGG",
    "alexnet",
    "alexnet_small",
    "cifar_resnet",
    "get_model",
    "googlenet",
    "googlenet_small",
    "lenet5",
    "lenet_caffe",
    "list_models",
    "make_vgg_features",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vgg_small",
    "GRU",
    "LSTM",
    "RNN",
    "SequenceClassifier",
    "sequence_gru",
    "sequence_lstm",
    "sequence_rnn",
    "Autoencoder",
    "ConvAutoencoder",
    "autoencoder",
    "conv_autoencoder",
    "denoising_autoencoder",
    "sparse_autoencoder",
]
