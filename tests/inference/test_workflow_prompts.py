"""A step's prompt: placeholders filled in one pass (a document that contains a placeholder is
data, never expanded), unknown braces left as written; what an admin's steps get wrong is named."""

from __future__ import annotations

from apps.inference.workflows.prompts import Output, problems, render

DRAFTS = [Output("clinical", "Clinical", "course: pneumonia"), Output("billing", "Billing", "J18.9")]


def test_the_placeholders_take_the_document_and_the_earlier_outputs():
    text = render("Note: {document}\n{outputs}\nCode: {billing}", 1, "the note", DRAFTS)
    assert text == (
        "Note: the note\n## clinical (Clinical)\ncourse: pneumonia\n\n## billing (Billing)\nJ18.9\nCode: J18.9"
    )


def test_a_document_naming_a_placeholder_is_not_expanded():
    assert render("{document}", 0, "see {outputs} and {billing}", DRAFTS) == "see {outputs} and {billing}"


def test_unknown_braces_stay_as_written():
    assert render('Answer as {"codes": []} for {document}', 0, "x", []) == 'Answer as {"codes": []} for x'


def test_an_empty_prompt_sends_the_document_then_the_outputs():
    assert render("", 0, "the note", []) == "the note"
    assert render("", 1, "the note", DRAFTS[:1]) == "the note\n\n## clinical (Clinical)\ncourse: pneumonia"


def test_a_step_using_an_output_not_made_yet_is_named():
    found = problems([("a", 0, "{document}"), ("b", 0, "{a}"), ("c", 1, "{outputs} {a}"), ("d", 0, "{outputs}")])
    assert len(found) == 2
    assert "Step 'b' (stage 0) uses {a}" in found[0]
    assert "Step 'd': {outputs} in stage 0" in found[1]


def test_a_name_used_twice_and_a_missing_stage_0_are_named():
    assert problems([("a", 1, ""), ("a", 1, "")]) == ["Step 'a' is named twice.", "The first stage is stage 0."]
    assert problems([("a", 0, "{document}"), ("b", 1, "{a}")]) == []
