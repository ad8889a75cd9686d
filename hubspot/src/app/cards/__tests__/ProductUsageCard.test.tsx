import {
  Button,
  EmptyState,
  ErrorState,
  LoadingSpinner,
  ProgressBar,
  StatusTag,
  Tag,
  Text,
} from '@hubspot/ui-extensions';
import { createRenderer } from '@hubspot/ui-extensions/testing';
import { describe, expect, it } from 'vitest';

import { ProductUsageCard } from '../ProductUsageCard.tsx';
import { BACKEND_URL, type CardAnswer, cardUrl, type Fetcher, OBJECT_TYPES } from '../usage.ts';

const SYNCED: CardAnswer = {
  status: 'synced',
  subject: 'account',
  name: 'Acme',
  activation: { rate: 60, nextStep: 'Invite 3 teammates' },
  engagement: { score: 72, segment: 'Engaged', trend: 'Red Hot', change: 14 },
  features: { used: ['Report Created'], notUsed: ['Dashboard Shared'] },
  pql: { isPql: true, kind: 'Hand-raiser', reason: 'Asked for a demo.', at: null },
  leadType: 'Golden Lead',
  chanceToConvert: 90,
  adminUrl: `${BACKEND_URL}/app/`,
};

function answering(status: number, body: unknown): Fetcher & { urls: string[] } {
  const urls: string[] = [];
  const fetcher = async (url: string) => {
    urls.push(url);
    return { ok: status < 400, status, json: async () => body };
  };
  return Object.assign(fetcher, { urls });
}

function failing(message: string): Fetcher {
  return async () => {
    throw new Error(message);
  };
}

function renderCard(fetcher: Fetcher) {
  const renderer = createRenderer('crm.record.tab');
  renderer.render(
    <ProductUsageCard objectTypeId={OBJECT_TYPES.company} objectId={123} fetcher={fetcher} />,
  );
  return renderer;
}

describe('ProductUsageCard', () => {
  it('shows a spinner while the engine answers', () => {
    const never: Fetcher = () => new Promise(() => {});
    const { findByTestId } = renderCard(never);
    expect(findByTestId(LoadingSpinner, 'loading')).toBeDefined();
  });

  it('asks the engine for this record', async () => {
    const fetcher = answering(200, SYNCED);
    const { waitFor, findByTestId } = renderCard(fetcher);
    await waitFor(() => expect(findByTestId(ProgressBar, 'activation')).toBeDefined());
    expect(fetcher.urls).toEqual([cardUrl('0-2', 123)]);
    expect(fetcher.urls[0]).toBe(`${BACKEND_URL}/hubspot/app-card?objectTypeId=0-2&objectId=123`);
  });

  it('shows activation, engagement, PQL, lead type and features once synced', async () => {
    const { waitFor, findByTestId } = renderCard(answering(200, SYNCED));
    await waitFor(() => expect(findByTestId(ProgressBar, 'activation')).toBeDefined());
    expect(findByTestId(ProgressBar, 'activation').props.value).toBe(60);
    expect(findByTestId(Text, 'next-step').text).toBe('Next step: Invite 3 teammates');
    expect(findByTestId(Tag, 'segment').text).toBe('Engaged');
    expect(findByTestId(Tag, 'trend').text).toBe('Red Hot');
    expect(findByTestId(StatusTag, 'pql').text).toBe('PQL (Hand-raiser)');
    expect(findByTestId(StatusTag, 'pql').props.variant).toBe('success');
    expect(findByTestId(Text, 'pql-reason').text).toBe('Asked for a demo.');
    expect(findByTestId(Text, 'lead-type').text).toBe(
      'Lead type: Golden Lead, 90% chance to convert',
    );
    expect(findByTestId(Button, 'open-admin').props.href).toBe(`${BACKEND_URL}/app/`);
  });

  it('says a record is not scored yet, with a way to the engine', async () => {
    const answer: CardAnswer = { status: 'not_synced', subject: 'user', adminUrl: 'https://x/app/' };
    const { waitFor, findByTestId } = renderCard(answering(200, answer));
    await waitFor(() => expect(findByTestId(EmptyState, 'not-synced')).toBeDefined());
    expect(findByTestId(Button, 'open-admin').props.href).toBe('https://x/app/');
  });

  it('shows the engine refusing, with its message', async () => {
    const { waitFor, findByTestId } = renderCard(
      answering(404, { code: 'not_installed', message: 'the app is not installed in 7' }),
    );
    await waitFor(() => expect(findByTestId(ErrorState, 'error')).toBeDefined());
    expect(findByTestId(Text, 'error-message').text).toContain('the app is not installed in 7');
  });

  it('shows an unreachable engine and fetches again on retry', async () => {
    let calls = 0;
    const flaky: Fetcher = async (url) => {
      calls += 1;
      if (calls === 1) throw new Error('network down');
      return answering(200, SYNCED)(url);
    };
    const { waitFor, findByTestId } = renderCard(flaky);
    await waitFor(() => expect(findByTestId(ErrorState, 'error')).toBeDefined());
    expect(findByTestId(Text, 'error-message').text).toContain('network down');
    findByTestId(Button, 'retry').trigger('onClick');
    await waitFor(() => expect(findByTestId(ProgressBar, 'activation')).toBeDefined());
    expect(calls).toBe(2);
  });
});
