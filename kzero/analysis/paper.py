"""The paper's numbers, as read off its figures (Schicho, 2023): what the report
compares kzero's runs with."""

__all__ = ["FIGURES", "PAPER", "READING_PRECISION"]

# Final-epoch test accuracy read off the paper's Figures 3-11 (Schicho, 2023).
PAPER = {
    ("mnist_logreg", "logreg_lecun"): 0.925,
    ("mnist_fnn", "fnn_lecun"): 0.975,
    ("mnist_fnn", "fnn_zero_normal_x1"): 0.970,
    ("mnist_fnn", "fnn_zero_uniform_x1"): 0.971,
    ("mnist_fnn_scaled", "fnn_zero_normal_x0.01"): 0.970,
    ("mnist_fnn_scaled", "fnn_zero_normal_x1"): 0.970,
    ("mnist_fnn_scaled", "fnn_zero_normal_x100"): 0.86,
    ("mnist_cnn", "cnn_lecun"): 0.977,
    ("mnist_cnn", "cnn_zero_normal_x1"): 0.9725,
    ("mnist_cnn", "cnn_zero_uniform_x1"): 0.963,
    ("mnist_cnn_scaled", "cnn_zero_normal_x0.01"): 0.975,
    ("mnist_cnn_scaled", "cnn_zero_normal_x1"): 0.975,
    ("mnist_cnn_scaled", "cnn_zero_normal_x100"): 0.10,
    ("mnist_zero", "fnn_zero"): 0.1135,
    ("mnist_zero", "cnn_zero"): 0.1135,
    ("cifar_logreg", "logreg_lecun"): 0.37,
    ("cifar_fnn", "fnn_lecun"): 0.49,
    ("cifar_fnn", "fnn_zero_normal_x1"): 0.485,
    ("cifar_fnn", "fnn_zero_uniform_x1"): 0.49,
    ("cifar_cnn", "cnn_lecun"): 0.80,
    ("cifar_cnn", "cnn_zero_normal_x1"): 0.70,
    ("cifar_cnn", "cnn_zero_uniform_x1"): 0.69,
    ("cifar_zero", "fnn_zero"): 0.10,
    ("cifar_zero", "cnn_zero"): 0.10,
    ("cifar_resnet50", "resnet50_lecun"): 0.88,
    ("cifar_resnet50", "resnet50_zero_normal_x1"): 0.86,
    ("cifar_resnet50", "resnet50_zero_uniform_x1"): 0.87,
    # What the paper's Figure 11 actually ran: its code's zero init reached only
    # the stem conv and the last layer (flags/cifar_resnet50_paper_code.flags).
    ("cifar_resnet50", "resnet50_zero_normal_x1_paper_code"): 0.86,
    ("cifar_resnet50", "resnet50_zero_uniform_x1_paper_code"): 0.87,
}

# The paper's figure for each experiment: its number(s), its subject and the
# epochs it trained, in the paper's order.
FIGURES = {
    "mnist_fnn": ("Figure 3", "MNIST FNN", 10),
    "mnist_fnn_scaled": ("Figure 4", "MNIST FNN, bias scales", 10),
    "mnist_cnn": ("Figure 5", "MNIST CNN", 15),
    "mnist_cnn_scaled": ("Figure 6", "MNIST CNN, bias scales", 15),
    "mnist_zero": ("Figure 7", "MNIST, pure zero init", 15),
    "mnist_logreg": ("Figures 3, 5 and 7", "MNIST logistic baseline", 15),
    "cifar_fnn": ("Figure 8", "CIFAR-10 FNN", 15),
    "cifar_cnn": ("Figure 9", "CIFAR-10 CNN", 20),
    "cifar_zero": ("Figure 10", "CIFAR-10, pure zero init", 20),
    "cifar_logreg": ("Figures 8, 9 and 10", "CIFAR-10 logistic baseline", 20),
    "cifar_resnet50": ("Figure 11", "CIFAR-10 ResNet-50", 30),
}

# The paper's values are read off its figures; closer than this to ours, a
# difference is within what reading a plot can tell.
READING_PRECISION = 0.01
