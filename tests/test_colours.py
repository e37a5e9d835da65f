"""Colour agreement (issue 28, item 3): the colour terms a prompt names, the dominant colours of a picture, and how
often they agree: a cyanotype on a blue ground agrees with "blue", a brown texture does not."""

import numpy as np
import pytest

from atelier.colours import agreement, dominant_colours, named_colours


def solid(rgb, size=64) -> np.ndarray:
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_prompts_name_basic_colour_terms_and_synonyms():
    assert named_colours("Cyanotype of algae on blue background") == {"blue"}
    assert named_colours("a Gray cat on a crimson sofa") == {"grey", "red"}
    assert named_colours("a portrait of a sailor at dusk") == set()
    assert named_colours("bluebell meadow") == set()  # whole words only


@pytest.mark.parametrize(
    "rgb, name",
    [((30, 70, 190), "blue"), ((120, 75, 40), "brown"), ((235, 235, 235), "white"), ((200, 30, 30), "red")],
)
def test_a_solid_picture_has_its_colour_dominant(rgb, name):
    assert dominant_colours(solid(rgb)) == [name]


def test_a_two_colour_picture_lists_both_largest_first():
    image = solid((240, 215, 50))
    image[:, :24] = (40, 80, 200)  # 37.5% blue, the rest yellow
    assert dominant_colours(image) == ["yellow", "blue"]
    assert dominant_colours(image.astype(float) / 255) == ["yellow", "blue"]  # floats in [0, 1] too


def test_agreement_counts_only_prompts_that_name_a_colour():
    blue, brown = solid((30, 70, 190)), solid((120, 75, 40))
    prompts = ["Cyanotype of algae on blue background"] * 2 + ["a landscape"]
    assert agreement([blue, brown, brown], prompts) == {"agreement": 0.5, "images": 2}
    assert agreement([brown], ["a landscape"]) == {"agreement": None, "images": 0}
