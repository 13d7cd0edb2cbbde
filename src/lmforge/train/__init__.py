"""Training: recipes, the loop, checkpoints, the schedule, validation.

`lmforge.train(recipe, out)` is the public API's train, and importing any `lmforge.train.<module>` binds this
package to that very name; so the package itself is callable and does what the API documents."""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, recipe, out, **kwargs):
        """Train `recipe` (a Recipe, a dict of recipe keys, a YAML path or a shipped recipe's name) into run
        directory `out`; keyword arguments go to lmforge.train.trainer.train. Returns its summary."""
        from lmforge.train.recipe import Recipe, load_recipe, parse_recipe
        from lmforge.train.trainer import train

        if isinstance(recipe, dict):
            recipe = parse_recipe(recipe)
        elif not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe)
        return train(recipe, out, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
