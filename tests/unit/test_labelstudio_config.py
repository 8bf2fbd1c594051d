"""The labelling config on the SDK's LabelInterface: built, parsed, read from any project."""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import canonicalize

import pytest
from label_studio_sdk.label_interface import LabelInterface

from ner.errors import LabelStudioError
from ner.labelstudio.config import LabelConfig, is_generated, label_config, parse_label_config

#: The config brandloop generated before it was built with ``LabelInterface.create``.
EARLIER_SPELLING = (
    '<View><Labels name="label" toName="text"><Label value="BRAND"/></Labels>'
    '<Text name="text" value="$text"/></View>'
)


def test_label_config_has_the_documented_shape() -> None:
    # given one label / when the config is built / then it is exactly the documented XML
    assert label_config(["BRAND"]) == (
        '<View><Labels name="label" toName="text"><Label value="BRAND" /></Labels>'
        '<Text name="text" value="$text" /></View>'
    )
    # and it is the same XML document as the one generated before (only spelled otherwise)
    assert canonicalize(label_config(["BRAND"])) == canonicalize(EARLIER_SPELLING)


def test_label_config_has_one_label_element_per_label_in_order() -> None:
    # given several labels / when built and parsed back / then all labels come back in order
    labels = ["BRAND", "PRODUCT", "ORG"]
    xml = label_config(labels)
    assert xml.count("<Label ") == len(labels)
    assert parse_label_config(xml) == LabelConfig("label", "text", tuple(labels), "text")


def test_label_config_escapes_xml_special_characters() -> None:
    # given labels with XML metacharacters / when built and parsed / then they round-trip
    labels = ["A&B", 'say "hi"', "<x>", "l'oréal"]
    xml = label_config(labels)
    assert "A&amp;B" in xml and "&quot;hi&quot;" in xml and "&lt;x&gt;" in xml
    assert parse_label_config(xml).labels == tuple(labels)


@pytest.mark.parametrize("labels", [[], ["BRAND", "BRAND"], ["BRAND", " "], "BRAND"])
def test_label_config_refuses_bad_label_lists(labels: Any) -> None:
    # given an empty, duplicated, blank or string label list / then a clear error
    with pytest.raises(LabelStudioError):
        label_config(labels)


def test_parse_label_config_reads_names_from_any_project() -> None:
    # given a hand-written config with other names, a Choices control and nesting
    xml = """
    <View>
      <Header value="Find the brands"/>
      <View style="padding: 4px">
        <Text name="tweet" value="$content" granularity="word"/>
      </View>
      <Choices name="sentiment" toName="tweet"><Choice value="pos"/></Choices>
      <Labels name="ner" toName="tweet">
        <Label value="BRAND" background="red"/>
        <Label value="PRODUCT"/>
      </Labels>
    </View>
    """
    # when parsed
    config = parse_label_config(xml)
    # then the names come from the config, not from our defaults
    assert config == LabelConfig("ner", "tweet", ("BRAND", "PRODUCT"), "content")


def test_parse_label_config_skips_labels_bound_to_non_text_objects() -> None:
    # given RectangleLabels-like Labels on an Image first, and a comma list of objects
    xml = (
        '<View><Image name="img" value="$image"/>'
        '<Labels name="boxes" toName="img"><Label value="LOGO"/></Labels>'
        '<Labels name="spans" toName="img, body"><Label value="BRAND"/></Labels>'
        '<Text name="body" value="$body"/></View>'
    )
    # when parsed / then the Labels bound to the Text object is chosen
    config = parse_label_config(xml)
    assert (config.from_name, config.to_name, config.text_key) == ("spans", "body", "body")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ('<View><Text name="text" value="$text"/></View>', "no <Labels>"),
        (
            '<View><Image name="i" value="$i"/><Labels name="l" toName="i">'
            '<Label value="B"/></Labels></View>',
            "no <Labels>",
        ),
        ("<View><Labels", "not valid XML"),
        (
            '<View><Labels name="l" toName="t"><Label value="B"/></Labels>'
            '<Text name="t" value="text"/></View>',
            "$text",
        ),
    ],
)
def test_parse_label_config_errors_are_clear(xml: str, message: str) -> None:
    # given a config without usable Labels→Text binding / then LabelStudioError says why
    with pytest.raises(LabelStudioError, match=message.replace("$", r"\$")):
        parse_label_config(xml)


# --------------------------------------------------------------------------- LabelInterface


def test_config_with_other_names_is_read_from_the_project_not_assumed() -> None:
    # given a project whose control, object and text field all have other names, with a
    # second Text object (not labelled) before the one the Labels control is bound to
    xml = (
        '<View><Text name="title" value="$headline"/>'
        '<View><Text name="body_text" value="$post_body"/></View>'
        '<Labels name="brand_spans" toName="body_text">'
        '<Label value="BRAND"/><Label value="PRODUCT"/></Labels></View>'
    )
    # when parsed / then every name is the project's own
    config = parse_label_config(xml)
    assert config == LabelConfig("brand_spans", "body_text", ("BRAND", "PRODUCT"), "post_body")
    # and the SDK's interface agrees on the control and its labels
    interface = LabelInterface(xml)
    control = interface.get_control(config.from_name)
    assert control.to_name == [config.to_name] and control.labels == list(config.labels)


def test_generated_config_parses_with_the_default_names_in_the_sdk() -> None:
    # given the generated config for two labels / when the SDK reads it
    interface = LabelInterface(label_config(["BRAND", "ORG"]))
    (control,) = interface.controls
    (text,) = interface.objects
    # then it has one Labels control on one Text reading $text, labels in order
    assert (control.tag, control.name, control.to_name) == ("Labels", "label", ["text"])
    assert control.labels == ["BRAND", "ORG"]
    assert (text.tag, text.name, text.value) == ("Text", "text", "$text")
    assert LabelConfig.for_labels(["BRAND", "ORG"]) == LabelConfig(
        "label", "text", ("BRAND", "ORG"), "text"
    )


def test_is_generated_tells_generated_configs_from_hand_written_ones() -> None:
    # given configs brandloop generated (now and before) and a hand-written one
    hand_written = (
        '<View><Header value="Brands"/><Text name="post" value="$body"/>'
        '<Labels name="brand" toName="post"><Label value="BRAND"/></Labels></View>'
    )
    # then only the generated ones count as generated, whatever their spelling
    assert is_generated(label_config(["BRAND", "PRODUCT"]))
    assert is_generated(EARLIER_SPELLING)
    assert is_generated(EARLIER_SPELLING.replace("><", ">\n  <"))
    assert not is_generated(hand_written)
    assert not is_generated("<View><Labels")
