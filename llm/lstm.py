"""The spec's LSTM forecaster, a baseline beside the LLM: fitted on the same training windows, early stopping on
the validation windows. Imports torch only inside its functions (CPU or CUDA)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from config.defaults import SEED


@dataclass(frozen=True)
class LstmSettings:
    hidden: int = 64
    layers: int = 1
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 4  # epochs without a better validation loss before stopping
    seed: int = SEED


def fit_lstm(x_train, y_train, x_val, y_val, settings: LstmSettings = LstmSettings()) -> dict:
    """Train the spec's LSTM forecaster on fixed-length windows (x: N × past × 5, y: N × future × 4).

    Returns {"model": the best-on-validation network, "figures": ...}. Adam on MSE, early stopping on
    the validation windows (the training windows' own tail when none are given).
    """
    import numpy as np
    import torch

    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x_train, y_train = torch.as_tensor(np.asarray(x_train)), torch.as_tensor(np.asarray(y_train))
    if len(x_val) == 0:  # hold out the chronologically last tenth (windows arrive in date order per company)
        cut = max(1, int(len(x_train) * 0.9))
        x_train, y_train, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    x_val, y_val = torch.as_tensor(np.asarray(x_val)).to(device), torch.as_tensor(np.asarray(y_val)).to(device)
    future, width = y_train.shape[1], y_train.shape[2]
    net = _LstmNet(x_train.shape[2], settings.hidden, settings.layers, future * width).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    best, best_state, stale, epochs, started = math.inf, None, 0, 0, time.perf_counter()
    for epoch in range(settings.epochs):
        _train_epoch(net, optimizer, (x_train, y_train), torch.randperm(len(x_train), generator=generator), settings)
        net.eval()
        with torch.no_grad():
            val_loss = float(torch.nn.functional.mse_loss(net(x_val).view_as(y_val), y_val))
        epochs = epoch + 1
        if val_loss < best - 1e-9:
            best, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= settings.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    figures = {
        "train_windows": len(x_train),
        "val_windows": len(x_val),
        "epochs": epochs,
        "best_val_mse": round(best, 8),
        "seconds": round(time.perf_counter() - started, 1),
        "device": device,
    }
    return {"model": net, "future": future, "width": width, "figures": figures}


def _train_epoch(net, optimizer, train, order, settings: LstmSettings) -> None:
    """One pass over the training windows `train` = (x, y) in the shuffled `order`, Adam on MSE."""
    import torch

    (x_train, y_train), device = train, next(net.parameters()).device
    net.train()
    for batch in order.split(settings.batch_size):
        xb, yb = x_train[batch].to(device), y_train[batch].to(device)
        loss = torch.nn.functional.mse_loss(net(xb).view_as(yb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def predict_lstm(fitted: dict, x):
    """N × future × 4 log-ratio forecasts for N windows."""
    import numpy as np
    import torch

    net = fitted["model"]
    device = next(net.parameters()).device
    with torch.no_grad():
        out = net(torch.as_tensor(np.asarray(x)).to(device)).view(len(x), fitted["future"], fitted["width"])
    return out.cpu().numpy()


def _LstmNet(features: int, hidden: int, layers: int, outputs: int):
    import torch

    class LstmNet(torch.nn.Module):
        """LSTM over the past days, a linear head from the last hidden state to every future step's OHLC."""

        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, outputs)

        def forward(self, x):
            output, _ = self.lstm(x)
            return self.head(output[:, -1])

    return LstmNet()
