"""`TorchRMSprop`: RMSprop with PyTorch's update, the optimiser of the authors' runs."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_stm")
class TorchRMSprop(keras.optimizers.RMSprop):
    """RMSprop that adds epsilon after the square root, as `torch.optim.RMSprop` does.

    With `v` the moving average of squared gradients and `b` the momentum buffer:

        v <- rho * v + (1 - rho) * g^2
        d  = sqrt(v) + epsilon                  (centered: sqrt(v - gbar^2) + epsilon)
        b <- momentum * b + g / d               (momentum > 0)
        w <- w - learning_rate * b              (momentum = 0: w <- w - learning_rate * g / d)

    `keras.optimizers.RMSprop` divides by `sqrt(v + epsilon)` instead, which never falls
    below `sqrt(epsilon)` (1e-4 for epsilon = 1e-8): parameters whose gradients are smaller
    than that move several times slower than in the authors' PyTorch runs. The STM tasks
    trained with RMSprop (associative retrieval, copy, priority sort, RAR) have many such
    parameters. With a constant learning rate Keras' way of carrying `learning_rate` inside
    the momentum buffer equals torch's; this class keeps Keras' form, so a learning-rate
    schedule acts as it does in `keras.optimizers.RMSprop`.

    Args:
        learning_rate: float or a `keras.optimizers.schedules.LearningRateSchedule`.
            Defaults to 0.01 (torch's default).
        rho: float, decay of the squared-gradient average (torch's `alpha`). Defaults to 0.99.
        momentum: float, momentum of the update. Defaults to 0.0.
        epsilon: float, added to the square root. Defaults to 1e-8 (torch's `eps`).
        centered: bool, normalise by the estimated variance instead of the second moment.
        **kwargs: the arguments of `keras.optimizers.Optimizer` (`clipvalue`,
            `global_clipnorm`, `weight_decay`, `name`, ...).

    Example:

    >>> import keras, keras_stm
    >>> optimizer = keras_stm.TorchRMSprop(learning_rate=1e-4, rho=0.99, momentum=0.9,
    ...                                    clipvalue=10.0)
    >>> variable = keras.Variable(1.0)
    >>> optimizer.apply([keras.ops.convert_to_tensor(1e-6)], [variable])
    >>> round(1.0 - float(variable.numpy()), 6)  # torch: 1e-4 * 1e-6 / (sqrt(1e-14) + 1e-8)
    0.000909

    References:
        PyTorch, `torch.optim.RMSprop` (its documented algorithm).
        Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020: the optimiser of
        the associative-retrieval and algorithmic tasks (`run_nar.py`, `run_toys.py`).
    """

    def __init__(
        self,
        learning_rate=0.01,
        rho=0.99,
        momentum=0.0,
        epsilon=1e-8,
        centered=False,
        name="torch_rmsprop",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            rho=rho,
            momentum=momentum,
            epsilon=epsilon,
            centered=centered,
            name=name,
            **kwargs,
        )

    def update_step(self, gradient, variable, learning_rate):
        """One update of `variable` (Keras' optimiser interface)."""
        lr = ops.cast(learning_rate, variable.dtype)
        # Dense, as torch's: every row's averages decay at every step, an embedding's too
        # (tensorflow passes an embedding's gradient as sparse IndexedSlices).
        gradient = ops.add(
            ops.zeros(variable.shape, variable.dtype), ops.cast(gradient, variable.dtype)
        )
        index = self._get_variable_index(variable)
        velocity = self._velocities[index]
        self.assign(
            velocity,
            ops.add(
                ops.multiply(self.rho, velocity), ops.multiply(1 - self.rho, ops.square(gradient))
            ),
        )
        second_moment = velocity
        if self.centered:
            average_gradient = self._average_gradients[index]
            self.assign(
                average_gradient,
                ops.add(
                    ops.multiply(self.rho, average_gradient), ops.multiply(1 - self.rho, gradient)
                ),
            )
            second_moment = ops.subtract(velocity, ops.square(average_gradient))
        increment = ops.divide(
            ops.multiply(lr, gradient), ops.add(ops.sqrt(second_moment), self.epsilon)
        )
        if self.momentum > 0:
            momentum = self._momentums[index]
            self.assign(momentum, ops.add(ops.multiply(self.momentum, momentum), increment))
            self.assign_sub(variable, momentum)
        else:
            self.assign_sub(variable, increment)
