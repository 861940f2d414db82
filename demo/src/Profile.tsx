import { useEffect, useRef, useState, type FormEvent } from 'react';
import { PALETTE, PALETTE_NAMES, setIdentity, useIdentity } from './identity.js';
import { Avatar } from './ui.js';

/** You, in the header: your avatar and name; a click opens the editor. */
export function ProfileChip() {
  const me = useIdentity();
  const [open, setOpen] = useState(false);
  return (
    <div className="profile">
      <button id="profile-button" className="profile-chip" aria-expanded={open} aria-controls="profile-editor" onClick={() => setOpen(!open)} title="Your name and colour">
        <Avatar name={me.name} color={me.color} size="sm" />
        <span className="profile-name">{me.name}</span>
      </button>
      {open && <ProfileEditor onClose={() => setOpen(false)} />}
    </div>
  );
}

/** A small non-modal sheet: display name and colour (kept in this browser). */
export function ProfileEditor({ onClose }: { onClose: () => void }) {
  const me = useIdentity();
  const [name, setName] = useState(me.name);
  const [color, setColor] = useState(me.color);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.select(), []);

  function apply(event: FormEvent) {
    event.preventDefault();
    setIdentity({ name, color, confirmed: true });
    onClose();
  }
  return (
    <form
      id="profile-editor"
      className="popover"
      role="dialog"
      aria-label="Profile"
      onSubmit={apply}
      onKeyDown={(e) => {
        if (e.key === 'Escape') onClose();
      }}
    >
      <div className="popover-preview">
        <Avatar name={name.trim() || me.name} color={color} size="md" />
        <span>This is how your team sees you.</span>
      </div>
      <label className="field-label">
        <span>Your name</span>
        <input id="profile-name" ref={input} className="field" maxLength={40} value={name} onChange={(e) => setName(e.target.value)} autoComplete="nickname" />
      </label>
      <fieldset className="swatches">
        <legend>Colour</legend>
        {PALETTE.map((c, i) => (
          <label key={c} className="swatch" style={{ background: c }}>
            <input type="radio" name="color" value={c} checked={c === color} onChange={() => setColor(c)} aria-label={PALETTE_NAMES[i] ?? c} />
          </label>
        ))}
      </fieldset>
      <div className="popover-actions">
        <button type="button" className="btn btn-quiet" onClick={onClose}>
          Cancel
        </button>
        <button type="submit" className="btn btn-primary" disabled={!name.trim()}>
          Done
        </button>
      </div>
    </form>
  );
}

/** Asked once: a friendly name was made up for you; keep it or choose another. */
export function WelcomeBanner() {
  const me = useIdentity();
  const [editing, setEditing] = useState(false);
  if (me.confirmed) return null;
  return (
    <div id="welcome" className="banner banner-welcome">
      <Avatar name={me.name} color={me.color} size="sm" />
      <span>
        Welcome! Your team will see you as <strong>{me.name}</strong>.
      </span>
      <span className="banner-actions">
        <button className="btn btn-quiet btn-small" onClick={() => setEditing(true)}>
          Choose another name
        </button>
        <button className="btn btn-primary btn-small" onClick={() => setIdentity({ confirmed: true })}>
          Keep it
        </button>
      </span>
      {editing && <ProfileEditor onClose={() => setEditing(false)} />}
    </div>
  );
}
