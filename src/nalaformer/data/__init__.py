"""Datasets: Fashion-MNIST (Debian package / path / download), ImageFolder trees, text corpora."""
