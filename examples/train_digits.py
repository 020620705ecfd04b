"""Train a small CNN on the 8x8 handwritten digits that ship with Needle.

    python examples/train_digits.py [--device cpu|cuda|cudnn|webgpu] [--epochs 8] [--compile]

Prints a progress bar per epoch, the mean training loss of each epoch and the final test
accuracy (about 98% after 8 epochs, well above 90%). The bar is drawn only on a terminal.
"""
import argparse
import sys
import time

import numpy as np

import needle
import needle.nn as nn
from needle.data import DataLoader, NDArrayDataset
from needle.data.digits import digits_split


def build_model(device):
    def conv_bn(cin, cout, stride):
        return [nn.Conv(cin, cout, 3, stride=stride, device=device), nn.BatchNorm2d(cout, device=device),
                nn.ReLU()]
    return nn.Sequential(*conv_bn(1, 16, 1), *conv_bn(16, 32, 2), nn.Flatten(),
                         nn.Linear(32 * 4 * 4, 64, device=device), nn.ReLU(),
                         nn.Linear(64, 10, device=device))


def progress(i, total, loss, start, width=30):
    if not sys.stdout.isatty():  # a redrawn bar is noise in a log file
        return
    done = int(width * (i + 1) / total)
    sys.stdout.write(f"\r  [{'#' * done}{'.' * (width - done)}] {i + 1}/{total} "
                     f"loss {loss:.4f} {time.perf_counter() - start:.1f}s")
    sys.stdout.flush()


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with needle.no_grad():
        for x, y in loader:
            pred = model(x).numpy().argmax(axis=1)
            correct += int((pred == y.numpy()).sum())
            total += y.shape[0]
    return correct / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cudnn or webgpu")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="run the training step as one compiled graph (needle.compile)")
    args = parser.parse_args(argv)

    np.random.seed(args.seed)
    device = needle.device(args.device)
    x_train, y_train, x_test, y_test = digits_split()
    x_train, x_test = x_train[:, None], x_test[:, None]  # NCHW with one channel
    train = DataLoader(NDArrayDataset(x_train, y_train), args.batch_size, shuffle=True, device=device)
    test = DataLoader(NDArrayDataset(x_test, y_test), 256, device=device)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8, device {device}")

    model = build_model(device)
    loss_fn = nn.SoftmaxLoss()
    opt = needle.optim.Adam(model.parameters(), lr=args.lr)

    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = needle.compile(train_step) if args.compile else train_step
    for epoch in range(args.epochs):
        model.train()
        losses, start = [], time.perf_counter()
        for i, (x, y) in enumerate(train):
            loss = step(x, y)
            losses.append(loss.numpy().item())
            progress(i, len(train), np.mean(losses), start)
        print(f"\repoch {epoch + 1}/{args.epochs}: train loss {np.mean(losses):.4f} "
              f"({time.perf_counter() - start:.1f}s)" + " " * 30)
    accuracy = evaluate(model, test)
    print(f"test accuracy: {accuracy:.2%}")
    return accuracy


if __name__ == "__main__":
    main()
