"""Forms validate input; the views pass ``cleaned_data`` to a service to write it.

Every field gets an ``autocomplete`` hint; Django adds ``aria-invalid`` and ``aria-describedby``
(help text and error ids) when it renders a field, and templates/accounts/_field.html gives the
error list the id they point to.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from accounts.models import User, normalize_email
from accounts.selectors import email_is_taken

# Messages in English, marked for translation; they are translated where they are shown (gettext, gettext_lazy).
PASSWORD_HELP = gettext_noop(
    "At least 8 characters. Avoid common passwords, only digits, or anything close to your name or e-mail."
)
EMAIL_INVALID = gettext_noop("Enter a valid e-mail address, like name@example.com.")
EMAIL_TAKEN = gettext_noop(
    "An account with this e-mail address already exists. Log in, or reset your password if you forgot it."
)
PASSWORD_WRONG = gettext_noop("That password is not right.")
PASSWORD_MISMATCH = gettext_noop("The two passwords don't match.")
# Blank follows the browser (Accept-Language); the languages keep their own names (settings.LANGUAGES).
LANGUAGE_CHOICES = [("", _("Same as my browser")), *settings.LANGUAGES]


def _email_field(label: str = _("E-mail address"), **attrs: object) -> forms.EmailField:
    return forms.EmailField(
        label=label,
        max_length=254,
        error_messages={"invalid": _(EMAIL_INVALID)},
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
        label=_("Your name"),
        max_length=150,
        help_text=_("How Djinn greets you. You can change it later."),
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    password1 = _password_field(_("Password"), "new-password", _(PASSWORD_HELP))
    password2 = _password_field(_("Confirm password"), "new-password")

    def clean_email(self) -> str:
        email = normalize_email(self.cleaned_data["email"])
        if email_is_taken(email=email):
            raise ValidationError(gettext(EMAIL_TAKEN), code="taken")
        return email

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", ValidationError(gettext(PASSWORD_MISMATCH), code="password_mismatch"))
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
    password = _password_field(_("Password"), "current-password")


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        label=_("Display name"), max_length=150, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    language = forms.ChoiceField(
        label=_("Language"),
        required=False,
        choices=LANGUAGE_CHOICES,
        help_text=_("The language of Djinn's pages, on every device you sign in on."),
    )
    custom_instructions = forms.CharField(
        label=_("Custom instructions"),
        required=False,
        max_length=4000,
        help_text=_("What should Djinn know about you, and how should it answer? Sent with every conversation."),
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
            raise ValidationError(gettext(PASSWORD_WRONG), code="password_incorrect")
        return password


class EmailChangeForm(_PasswordCheckedForm):
    new_email = _email_field(_("New e-mail address"))
    password = _password_field(
        _("Current password"),
        "current-password",
        _("We ask for it so nobody at an unlocked screen can take your account."),
    )

    def clean_new_email(self) -> str:
        email = normalize_email(self.cleaned_data["new_email"])
        if email == self.user.email:
            raise ValidationError(_("That is already your e-mail address."), code="unchanged")
        if email_is_taken(email=email, exclude_user_id=self.user.pk):
            raise ValidationError(_("Another account already uses this e-mail address."), code="taken")
        return email


class DeleteAccountForm(_PasswordCheckedForm):
    password = _password_field(_("Your password"), "current-password")


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Django's form (current password, new password twice, the validators) with our wording."""

    error_messages = {
        **auth_forms.PasswordChangeForm.error_messages,
        "password_incorrect": _(PASSWORD_WRONG),
        "password_mismatch": _(PASSWORD_MISMATCH),
    }

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["old_password"].label = _("Current password")
        self.fields["old_password"].widget.attrs.pop("autofocus", None)
        _label_new_password(self)

    def validate_password_for_user(self, user: User, password_field_name: str = "new_password2") -> None:
        _validate_new_password(self, user)


class PasswordResetForm(auth_forms.PasswordResetForm):
    email = _email_field(autofocus=True)


class SetPasswordForm(auth_forms.SetPasswordForm):
    error_messages = {**auth_forms.SetPasswordForm.error_messages, "password_mismatch": _(PASSWORD_MISMATCH)}

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
    form.fields["new_password1"].label = _("New password")
    form.fields["new_password1"].help_text = _(PASSWORD_HELP)
    form.fields["new_password2"].label = _("Confirm new password")
