"""proxy/hook_exchange.py without a gateway: the metadata copy the hooks after a failed one get."""

from proxy.hook_exchange import metadata_copy


def test_the_metadata_copy_shares_no_dict_or_list():
    marker = object()
    tags = ["a"]
    metadata = {"tags": tags, "nested": {"more": [{"deep": tags}]}, "other": marker}
    copy = metadata_copy(metadata)
    assert copy == metadata and copy is not metadata
    tags.append("late")
    metadata["nested"]["more"][0]["new"] = 1
    assert copy == {"tags": ["a"], "nested": {"more": [{"deep": ["a"]}]}, "other": marker}
    assert copy["tags"] is copy["nested"]["more"][0]["deep"]  # held twice, copied once
    assert copy["other"] is marker  # what is no dict or list is shared


def test_the_metadata_copy_takes_any_depth_and_a_cycle():
    deep: list = []
    inner = deep
    for _ in range(50_000):  # deeper than any recursion could copy
        inner.append([])
        inner = inner[0]
    looped: dict = {"name": "loop"}
    looped["self"] = looped
    copy = metadata_copy({"deep": deep, "looped": looped})
    assert copy["looped"]["self"] is copy["looped"] and copy["looped"] is not looped
    depth, inner, original = 0, copy["deep"], deep
    while inner:
        assert inner is not original
        inner, original, depth = inner[0], original[0], depth + 1
    assert depth == 50_000
