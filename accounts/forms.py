"""Forms validate input; the views pass ``cleaned_data`` to a service to write it.

Every field gets an ``autocomplete`` hint; Django adds ``aria-invalid`` and ``aria-describedby``
(help text and error ids) when it renders a field, and templates/accounts/_field.html gives the
error list the id they point to.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError

from accounts.models import User, normalize_email
from accounts.selectors import email_is_taken

PASSWORD_HELP = "At least 8 characters. Avoid common passwords, only digits, or anything close to your name or e-mail."
EMAIL_INVALID = "Enter a valid e-mail address, like name@example.com."
EMAIL_TAKEN = "An account with this e-mail address already exists. Log in, or reset your password if you forgot it."
PASSWORD_WRONG = "That password is not right."
PASSWORD_MISMATCH = "The two passwords don't match."


def _email_field(label: str = "E-mail address", **attrs: object) -> forms.EmailField:
    return forms.EmailField(
        label=label,
        max_length=254,
        error_messages={"invalid": EMAIL_INVALID},
        widget=forms.EmailInput(attrs={"autocomplete": "email", **attrs}),
    )


def _password_field(label: str, autocomplete: str, help_text: str = "", **attrs: object) -> forms.CharField:
    return forms.CharField(
        label=label,
        strip=False,
        help_text=help_text,
        widget=forms.PasswordInput(attrs={"autocomplete": autocomplete, **attrs}),
    )


class SignUpForm(forms.Form):
    email = _email_field(autofocus=True)
    display_name = forms.CharField(
        label="Your name",
        max_length=150,
        help_text="How Djinn greets you. You can change it later.",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    password1 = _password_field("Password", "new-password", PASSWORD_HELP)
    password2 = _password_field("Confirm password", "new-password")

    def clean_email(self) -> str:
        email = normalize_email(self.cleaned_data["email"])
        if email_is_taken(email=email):
            raise ValidationError(EMAIL_TAKEN, code="taken")
        return email

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", ValidationError(PASSWORD_MISMATCH, code="password_mismatch"))
        elif password1:
            # An unsaved user lets the similarity validator compare against the e-mail and name.
            candidate = User(email=cleaned.get("email") or "", display_name=cleaned.get("display_name") or "")
            try:
                password_validation.validate_password(password1, user=candidate)
            except ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class LogInForm(forms.Form):
    email = _email_field(autofocus=True)
    password = _password_field("Password", "current-password")


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        label="Display name", max_length=150, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    custom_instructions = forms.CharField(
        label="Custom instructions",
        required=False,
        max_length=4000,
        help_text="What should Djinn know about you, and how should it answer? Sent with every conversation.",
        widget=forms.Textarea(attrs={"rows": 6}),
    )


class _PasswordCheckedForm(forms.Form):
    """A form that asks for the signed-in user's current password before a sensitive change."""

    def __init__(self, user: User, *args: object, **kwargs: object) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise ValidationError(PASSWORD_WRONG, code="password_incorrect")
        return password


class EmailChangeForm(_PasswordCheckedForm):
    new_email = _email_field("New e-mail address")
    password = _password_field(
        "Current password", "current-password", "We ask for it so nobody at an unlocked screen can take your account."
    )

    def clean_new_email(self) -> str:
        email = normalize_email(self.cleaned_data["new_email"])
        if email == self.user.email:
            raise ValidationError("That is already your e-mail address.", code="unchanged")
        if email_is_taken(email=email, exclude_user_id=self.user.pk):
            raise ValidationError("Another account already uses this e-mail address.", code="taken")
        return email


class DeleteAccountForm(_PasswordCheckedForm):
    password = _password_field("Your password", "current-password")


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Django's form (current password, new password twice, the validators) with our wording."""

    error_messages = {
        **auth_forms.PasswordChangeForm.error_messages,
        "password_incorrect": PASSWORD_WRONG,
        "password_mismatch": PASSWORD_MISMATCH,
    }

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["old_password"].label = "Current password"
        self.fields["old_password"].widget.attrs.pop("autofocus", None)
        _label_new_password(self)

    def validate_password_for_user(self, user: User, password_field_name: str = "new_password2") -> None:
        _validate_new_password(self, user)


class PasswordResetForm(auth_forms.PasswordResetForm):
    email = _email_field(autofocus=True)


class SetPasswordForm(auth_forms.SetPasswordForm):
    error_messages = {**auth_forms.SetPasswordForm.error_messages, "password_mismatch": PASSWORD_MISMATCH}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        _label_new_password(self)
        self.fields["new_password1"].widget.attrs["autofocus"] = True

    def validate_password_for_user(self, user: User, password_field_name: str = "new_password2") -> None:
        _validate_new_password(self, user)


def _validate_new_password(form: auth_forms.SetPasswordForm, user: User) -> None:
    """Django's SetPasswordMixin files a too-short or too-common password under the confirmation field; the
    fault is in the password typed first, so the error goes there (SetPasswordMixin.validate_password_for_user
    is the documented hook, and only the field name changes)."""
    auth_forms.SetPasswordForm.validate_password_for_user(form, user, password_field_name="new_password1")


def _label_new_password(form: forms.Form) -> None:
    form.fields["new_password1"].label = "New password"
    form.fields["new_password1"].help_text = PASSWORD_HELP
    form.fields["new_password2"].label = "Confirm new password"
