from __future__ import annotations

import uuid

from django import forms

MAX_ADJUSTMENT = 1_000_000


class CreditAdjustmentForm(forms.Form):
    amount = forms.IntegerField(
        min_value=-MAX_ADJUSTMENT,
        max_value=MAX_ADJUSTMENT,
        help_text="Credits to add (positive) or deduct (negative) on each selected account.",
    )
    memo = forms.CharField(max_length=500, help_text="Why: shown in the ledger and to the person.")
    # One token per rendered form: a double-submitted form applies once.
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter a non-zero amount.")
        return amount

    def clean_memo(self) -> str:
        memo = self.cleaned_data["memo"].strip()
        if not memo:
            raise forms.ValidationError("A memo is required.")
        return memo
