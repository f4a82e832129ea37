// The globals of Django's JavaScript translation catalog (/jsi18n/, loaded by base.html before every other
// script), for the type-check of scripts that call them.
declare function gettext(msgid: string): string;
declare function ngettext(singular: string, plural: string, count: number): string;
declare function pgettext(context: string, msgid: string): string;
declare function npgettext(context: string, singular: string, plural: string, count: number): string;
declare function interpolate(fmt: string, obj: unknown[] | Record<string, unknown>, named?: boolean): string;
declare function get_format(formatType: string): string | number | string[];
declare function pluralidx(count: number): number;
